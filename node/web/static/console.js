// Verbund console: light progressive enhancement; every page works
// without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // After a recipient search (the form's action ends in #weiterleiten),
  // put the keyboard focus on the first result, or back on the search
  // field when nothing was found.
  if (location.hash === "#weiterleiten") {
    var first = document.querySelector("#weiterleiten input[name=empfaenger][type=radio]") ||
      document.getElementById("empfaenger-suche");
    if (first) { first.focus(); }
  }
});

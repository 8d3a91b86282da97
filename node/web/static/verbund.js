// Verbund: light progressive enhancement. Every page works without it.
"use strict";

// The place chooser's autocomplete: an ARIA 1.2 combobox with a listbox
// (aria-expanded, aria-activedescendant; Down/Up move, Enter chooses,
// Escape closes). Choosing posts the hidden form data-choose names; without
// JavaScript the GET form lists the matches instead.
(function () {
  document.querySelectorAll("input[data-combobox]").forEach(function (input) {
    var list = document.getElementById("ort-liste");
    var status = document.getElementById("ort-status");
    var form = document.getElementById(input.getAttribute("data-choose"));
    if (!list || !form) { return; }
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    input.setAttribute("aria-expanded", "false");
    var items = [], active = -1, timer = null, seq = 0, choosing = false;
    // Enter on an option chooses it: the search form must not submit too.
    if (input.form) {
      input.form.addEventListener("submit", function (e) { if (choosing) { e.preventDefault(); } });
    }

    function close() {
      list.hidden = true;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
      active = -1;
    }
    function setActive(i) {
      var opts = list.querySelectorAll("[role=option]");
      if (!opts.length) { return; }
      active = (i + opts.length) % opts.length;
      opts.forEach(function (o, j) { o.setAttribute("aria-selected", j === active ? "true" : "false"); });
      input.setAttribute("aria-activedescendant", opts[active].id);
      opts[active].scrollIntoView({ block: "nearest" });
    }
    function choose(i) {
      if (i < 0 || i >= items.length) { return; }
      choosing = true;
      form.querySelector("input[name=ars]").value = items[i].ars;
      input.value = items[i].name;
      close();
      form.submit();
    }
    function show(places) {
      items = places;
      list.textContent = "";
      places.forEach(function (p, i) {
        var li = document.createElement("li");
        li.id = "ort-opt-" + i;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.textContent = p.name + (p.postalCode ? " (" + p.postalCode + ")" : "") + (p.state ? ", " + p.state : "");
        li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(i); });
        list.appendChild(li);
      });
      if (status) { status.textContent = places.length ? places.length + " Vorschläge. Mit Pfeil nach unten auswählen." : "Keine Vorschläge."; }
      if (places.length) {
        list.hidden = false;
        input.setAttribute("aria-expanded", "true");
      } else {
        close();
      }
    }
    function lookup() {
      var q = input.value.trim();
      if (q.length < 2) { show([]); return; }
      var mine = ++seq;
      fetch(input.getAttribute("data-combobox") + "?q=" + encodeURIComponent(q), { headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (places) { if (mine === seq) { show(places); } })
        .catch(function () { /* the GET form still works */ });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(lookup, 120);
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "ArrowDown") {
        e.preventDefault();
        if (list.hidden) { if (items.length) { list.hidden = false; input.setAttribute("aria-expanded", "true"); } else { lookup(); } }
        setActive(active + 1);
      } else if (e.key === "ArrowUp") {
        e.preventDefault();
        setActive(active - 1);
      } else if (e.key === "Enter") {
        if (!list.hidden && active >= 0) { e.preventDefault(); choose(active); }
      } else if (e.key === "Escape") {
        if (!list.hidden) { e.preventDefault(); close(); }
      }
    });
    input.addEventListener("blur", function () { setTimeout(close, 150); });
  });
})();

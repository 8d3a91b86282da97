// Verbund: light progressive enhancement. Every page works without it.
"use strict";

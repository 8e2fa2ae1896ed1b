/* Address search on the portal: suggestions while typing, as a combobox (the WAI-ARIA
   "list autocomplete" pattern): the arrows move through the list, Enter picks, Escape
   closes. Picking moves the map and its pin (maps.js listens for civicdesk:address-picked).
   A pin placed on the map fills in the nearest address, but only into a field that is empty
   or that we filled. Progressive: without JavaScript "Find address" submits the form and
   the server lists the matches. Suggestions are built with textContent only. */
(function () {
  "use strict";

  var DEBOUNCE_MS = 200;
  var MIN_LENGTH = 2;
  var MAX_LENGTH = 200; // what the search endpoint accepts

  var box = document.querySelector("[data-address-search]");
  if (!box || !window.fetch || !window.URLSearchParams) return;
  var input = document.getElementById(box.getAttribute("data-input"));
  var list = document.getElementById(box.getAttribute("data-listbox"));
  var statusText = document.getElementById(box.getAttribute("data-status"));
  if (!input || !list) return;
  var searchUrl = box.getAttribute("data-search-url");
  var reverseUrl = box.getAttribute("data-reverse-url");
  var reportUrl = box.getAttribute("data-report-url");
  var findButton = box.querySelector("button[name=find_address]");
  var textElement = document.getElementById("address-text");
  var TEXT = textElement ? JSON.parse(textElement.textContent) : {};

  var places = [];
  var active = -1;
  var timer = null;
  var asked = 0; // the latest search: answers to older ones that arrive late are dropped
  var located = 0; // the same for the address at the pin
  var bypass = false; // the search failed: let "Find address" go to the server after all
  // True while the field holds what a pick or the pin put there, not the resident's words.
  var autofilled = false;

  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-expanded", "false");
  input.setAttribute("aria-controls", list.id);
  input.setAttribute("autocomplete", "off");

  function say(message, values) {
    if (!statusText) return;
    var text = message || "";
    Object.keys(values || {}).forEach(function (key) {
      text = text.replace("%(" + key + ")s", values[key]);
    });
    statusText.textContent = text;
  }

  function getJSON(url, params) {
    return fetch(url + "?" + new URLSearchParams(params).toString(), {
      headers: { Accept: "application/json" },
      credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    });
  }

  function setOpen(open) {
    list.hidden = !open;
    input.setAttribute("aria-expanded", open ? "true" : "false");
    if (!open) {
      input.removeAttribute("aria-activedescendant");
      active = -1;
    }
  }

  function show(rows) {
    places = rows;
    active = -1;
    while (list.firstChild) list.removeChild(list.firstChild);
    rows.forEach(function (place, index) {
      var option = document.createElement("li");
      option.id = list.id + "-" + index;
      option.className = "address-option";
      option.setAttribute("role", "option");
      option.setAttribute("aria-selected", "false");
      option.appendChild(document.createTextNode(place.label));
      var detail = [place.kind === "street" ? TEXT.street || "whole street" : "", place.zipcode]
        .filter(Boolean).join(" · ");
      if (detail) {
        var small = document.createElement("span");
        small.className = "address-option-detail";
        small.textContent = " " + detail;
        option.appendChild(small);
      }
      option.addEventListener("click", function () { pick(place); });
      list.appendChild(option);
    });
    setOpen(rows.length > 0);
  }

  function highlight(index) {
    var options = list.children;
    if (!options.length) return;
    active = (index + options.length) % options.length;
    for (var i = 0; i < options.length; i++) {
      options[i].setAttribute("aria-selected", i === active ? "true" : "false");
    }
    input.setAttribute("aria-activedescendant", options[active].id);
    options[active].scrollIntoView({ block: "nearest" });
  }

  function search(fromButton) {
    var query = input.value.trim().slice(0, MAX_LENGTH);
    var ask = ++asked;
    if (query.length < MIN_LENGTH) {
      show([]);
      say("");
      return;
    }
    getJSON(searchUrl, { q: query })
      .then(function (data) {
        if (ask !== asked) return;
        var rows = data.results || [];
        show(rows);
        say(rows.length === 0 ? TEXT.none : rows.length === 1 ? TEXT.one : TEXT.count,
          { count: rows.length });
      })
      .catch(function () {
        if (fromButton && findButton) {
          bypass = true; // the server's own search step still works
          findButton.click();
        }
      });
  }

  function pick(place) {
    input.value = place.label;
    autofilled = true;
    setOpen(false);
    say(place.kind === "street" ? TEXT.picked_street : TEXT.picked, { label: place.label });
    document.dispatchEvent(new CustomEvent("civicdesk:address-picked", { detail: place }));
    var here = document.getElementById("report-here");
    if (here && reportUrl) {
      here.querySelector("a").href = reportUrl + "?" + new URLSearchParams({
        lat: place.lat.toFixed(6), lng: place.lng.toFixed(6), address: place.label
      }).toString();
      here.hidden = false;
    }
  }

  input.addEventListener("input", function () {
    autofilled = false;
    window.clearTimeout(timer);
    timer = window.setTimeout(search, DEBOUNCE_MS);
  });

  input.addEventListener("keydown", function (event) {
    var open = !list.hidden;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!places.length) return;
      event.preventDefault();
      var down = event.key === "ArrowDown";
      if (!open) setOpen(true);
      highlight(active < 0 ? (down ? 0 : places.length - 1) : active + (down ? 1 : -1));
    } else if (event.key === "Enter" && open) {
      // Enter picks the highlighted match; with none highlighted it shows which one it would
      // pick rather than sending the whole form from the middle of the address.
      event.preventDefault();
      if (active >= 0) pick(places[active]);
      else highlight(0);
    } else if (event.key === "Escape" && open) {
      event.preventDefault();
      setOpen(false);
    } else if (event.key === "Tab") {
      setOpen(false);
    }
  });

  // Keep the focus in the field while an option is clicked or tapped.
  list.addEventListener("mousedown", function (event) { event.preventDefault(); });
  input.addEventListener("blur", function () { setOpen(false); });

  if (findButton) {
    findButton.addEventListener("click", function (event) {
      if (bypass) return;
      event.preventDefault();
      window.clearTimeout(timer);
      input.focus();
      search(true);
    });
  }

  // A pin placed on the map (not by a pick): the nearest address, if the field is ours.
  document.addEventListener("civicdesk:location", function (event) {
    var where = event.detail || {};
    if (!reverseUrl || where.source === "search") return;
    if (input.value.trim() && !autofilled) return; // the resident's own words stay
    var ask = ++located;
    getJSON(reverseUrl, { lat: where.lat.toFixed(6), lng: where.lng.toFixed(6) })
      .then(function (data) {
        if (ask !== located || (input.value.trim() && !autofilled)) return;
        var found = data.result;
        // Nothing near the new place: what we filled in before no longer fits it.
        input.value = found ? found.label : "";
        autofilled = Boolean(found);
        if (found) say(TEXT.filled, { label: found.label });
      })
      .catch(function () { /* the address stays as it is; the pin is what counts */ });
  });
})();

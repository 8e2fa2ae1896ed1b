/* The report form's live "is it already reported?" list. Progressive: without JavaScript
   the server shows the same list as a second step. Built with textContent only — request
   descriptions are residents' words and never reach innerHTML. */
(function () {
  "use strict";

  var section = document.getElementById("nearby");
  var list = document.getElementById("nearby-list");
  var category = document.getElementById("id_category");
  var latInput = document.getElementById("id_lat");
  var lngInput = document.getElementById("id_lng");
  var seen = document.getElementById("id_file_anyway");
  var emailSlot = document.getElementById("nearby-email");
  var emailHome = document.getElementById("email-home");
  var textElement = document.getElementById("nearby-text");
  if (!section || !list || !category || !latInput || !lngInput) return;
  var text = textElement ? JSON.parse(textElement.textContent) : {};
  var latest = 0;

  function element(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content) node.textContent = content;
    return node;
  }

  function emailField() {
    var input = document.getElementById("id_email");
    return input ? input.closest(".field") : null;
  }

  function item(row) {
    var li = element("li", "nearby-item");
    li.setAttribute("data-testid", "nearby-item");
    if (row.thumbnails.length) {
      var photos = element("div", "nearby-photos");
      row.thumbnails.forEach(function (url) {
        var img = element("img");
        img.src = url;
        img.alt = text.photo || "";
        img.loading = "lazy";
        photos.appendChild(img);
      });
      li.appendChild(photos);
    }
    var facts = element("div", "nearby-facts");
    var heading = element("p");
    heading.appendChild(element("strong", "", row.category));
    heading.appendChild(document.createTextNode(" "));
    heading.appendChild(element("span", "status-badge status-" + row.status, row.status_label));
    facts.appendChild(heading);
    var meta = element("p", "help", (text.away || "%(distance)s m")
      .replace("%(distance)s", row.distance_m).replace("%(reported)s", row.reported_label) + " · ");
    var link = element("a", "", row.tracking_number);
    link.href = row.url;
    link.target = "_blank";
    link.rel = "noopener";
    meta.appendChild(link);
    facts.appendChild(meta);
    if (row.description) facts.appendChild(element("p", "description", row.description));
    var button = element("button", "button primary", text.follow || "Follow");
    button.type = "submit";
    button.name = "follow";
    button.value = row.tracking_number;
    facts.appendChild(button);
    li.appendChild(facts);
    return li;
  }

  function show(rows) {
    while (list.firstChild) list.removeChild(list.firstChild);
    rows.forEach(function (row) { list.appendChild(item(row)); });
    section.hidden = rows.length === 0;
    // Following needs the email, so while there is something to follow it sits here.
    var field = emailField();
    if (field && emailSlot && emailHome) {
      var slot = rows.length ? emailSlot : emailHome;
      if (field.parentNode !== slot) slot.appendChild(field);
    }
  }

  // Service notices covering the chosen place: "the city already knows".
  function showNotices(notices) {
    var box = document.getElementById("report-notices");
    if (!box) return;
    while (box.firstChild) box.removeChild(box.firstChild);
    notices.forEach(function (notice) {
      var card = element("div", "card notice");
      card.setAttribute("role", "note");
      card.appendChild(element("h2", "", notice.title));
      card.appendChild(element("p", "", notice.message));
      box.appendChild(card);
    });
  }

  function lookup() {
    if (!category.value || !latInput.value || !lngInput.value) return;
    var ask = ++latest;
    var url = section.getAttribute("data-url") + "?" + new URLSearchParams({
      category: category.value, lat: latInput.value, lng: lngInput.value
    }).toString();
    if (seen) seen.value = "";
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : { results: [] }; })
      .then(function (data) {
        if (ask !== latest) return;  // an older answer arriving after a newer question
        show(data.results || []);
        showNotices(data.notices || []);
        // The resident has seen what is nearby: "Send report" files without a second step.
        if (seen) seen.value = "1";
      })
      .catch(function () { /* the server-side second step still catches duplicates */ });
  }

  document.addEventListener("input", function (event) {
    if (event.target.id !== "id_email") return;
    var message = document.querySelector(".nearby-needs-email");
    if (message) message.parentNode.removeChild(message);
  });

  document.addEventListener("civicdesk:location", lookup);
  category.addEventListener("change", lookup);

  section.addEventListener("click", function (event) {
    var button = event.target.closest("button[name=follow]");
    var input = document.getElementById("id_email");
    if (!button || !input || input.value.trim()) return;
    event.preventDefault();
    var field = emailField();
    if (field && !field.querySelector(".nearby-needs-email")) {
      var message = element("p", "errorlist nearby-needs-email", text.needs_email || "");
      message.setAttribute("role", "alert");
      field.appendChild(message);
    }
    input.focus();
  });
})();

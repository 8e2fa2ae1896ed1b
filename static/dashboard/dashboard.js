/* The dashboard's heat map. The server counts requests in grid cells sized for the zoom
   level; this script only draws the cells and asks for the details of a clicked one.
   Popups are built with DOM methods and textContent, never HTML strings. */
(function () {
  "use strict";

  var PALETTE = ["#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#8c2d04"];
  var UNITS = { count: "requests", median_resolution: "h median to resolution", overdue: "% overdue" };

  function readJSON(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function colour(value, max) {
    if (value === null || value === undefined) return "#9ca3af";
    if (max <= 0) return PALETTE[0];
    var index = Math.min(PALETTE.length - 1, Math.floor((value / max) * PALETTE.length));
    return PALETTE[index];
  }

  function element(tag, text, parent) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function hours(value) {
    return value === null || value === undefined ? "—" : value + " h";
  }

  window.civicdeskDashboardMap = function (map) {
    var settings = readJSON("dashboard-map-settings");
    var metricSelect = document.getElementById("map-metric");
    var status = document.getElementById("map-status");
    var layer = L.layerGroup().addTo(map);
    var pending = null;
    map.fitBounds(settings.bounds, { animate: false });

    function url(base, extra) {
      return base + "?" + settings.query + (settings.query ? "&" : "") + new URLSearchParams(extra).toString();
    }

    function showCell(cell, zoom, rectangle) {
      var box = element("div");
      box.className = "cell-popup";
      element("p", "Loading…", box);
      rectangle.bindPopup(box).openPopup();
      fetch(url(settings.cell_url, { zoom: zoom, gy: cell.gy, gx: cell.gx }), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (detail) {
          box.textContent = "";
          element("h3", detail.count + (detail.count === 1 ? " request" : " requests"), box);
          var list = element("ul", null, box);
          detail.top_categories.forEach(function (category) {
            element("li", category.name + ": " + category.count, list);
          });
          element("p", "Median to first response: " + hours(detail.median_response_hours), box);
          element("p", "Median to resolution: " + hours(detail.median_resolution_hours), box);
          var link = element("a", "Open these requests in the admin", box);
          link.href = detail.admin_url;
          rectangle.getPopup().update();
        })
        .catch(function () { box.textContent = "Could not load the details."; });
    }

    function draw(data) {
      layer.clearLayers();
      var values = data.cells.map(function (cell) { return cell.value; }).filter(function (v) { return v !== null; });
      var max = values.length ? Math.max.apply(null, values) : 0;
      var total = 0;
      data.cells.forEach(function (cell) {
        total += cell.count;
        var rectangle = L.rectangle(
          [[cell.south, cell.west], [cell.south + cell.size, cell.west + cell.size]],
          { color: "#7c2d12", weight: 0.5, fillColor: colour(cell.value, max), fillOpacity: 0.6 }
        );
        var tip = element("span", (cell.value === null ? "—" : cell.value) + " " + UNITS[data.metric]);
        rectangle.bindTooltip(tip);
        rectangle.on("click", function () { showCell(cell, data.zoom, rectangle); });
        rectangle.addTo(layer);
      });
      status.textContent = data.cells.length + " cells · " + total + " requests" +
        (data.as_of ? " · as of " + new Date(data.as_of).toLocaleTimeString() : "");
      status.dataset.cells = String(data.cells.length);
      status.dataset.total = String(total);
    }

    function load() {
      var bounds = map.getBounds();
      var params = {
        bbox: [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()].join(","),
        zoom: map.getZoom(),
        metric: metricSelect.value
      };
      if (pending) pending.abort();
      pending = new AbortController();
      status.textContent = "Loading…";
      fetch(url(settings.grid_url, params), { credentials: "same-origin", signal: pending.signal })
        .then(function (response) { return response.json(); })
        .then(draw)
        .catch(function (error) { if (error.name !== "AbortError") status.textContent = "Map data unavailable."; });
    }

    map.on("moveend", load);
    metricSelect.addEventListener("change", load);
    load();
  };
})();

/* The dashboard's heat map. The server counts requests in grid cells sized for the zoom
   level; this script only draws the cells and asks for the details of a clicked one.
   Popups are built with DOM methods and textContent, never HTML strings. */
(function () {
  "use strict";

  var PALETTE = ["#fff7bc", "#fee391", "#fec44f", "#fe9929", "#ec7014", "#cc4c02", "#8c2d04"];

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

  window.civicdeskDashboardMap = function (map) {
    var settings = readJSON("dashboard-map-settings");
    // The page's words (translated by the server), numbers written as the reader writes
    // them, and times on the city's clock, like the figures' time in the page's header.
    var text = settings.text;
    var numbers = new Intl.NumberFormat(settings.language, { maximumFractionDigits: 1 });
    var clock = new Intl.DateTimeFormat(settings.language, {
      timeZone: settings.time_zone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
    });

    // Python's %(name)s and %% in the server's strings.
    function format(template, values) {
      return template.replace(/%\((\w+)\)s|%%/g, function (match, name) {
        return name ? values[name] : "%";
      });
    }

    function count(forms, n) {
      return format(n === 1 ? forms.one : forms.other, { count: numbers.format(n) });
    }

    function number(value) {
      return value === null || value === undefined ? "—" : numbers.format(value);
    }

    function hours(value) {
      return value === null || value === undefined ? "—" : format(text.hours, { value: numbers.format(value) });
    }

    // What a cell's tooltip says for the metric shown (a count, or a figure that may be
    // missing where nothing was resolved).
    function cellValue(metric, value) {
      var forms = text.values[metric];
      return typeof forms === "string" ? format(forms, { value: number(value) }) : count(forms, value);
    }

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
      element("p", text.loading, box);
      rectangle.bindPopup(box).openPopup();
      fetch(url(settings.cell_url, { zoom: zoom, gy: cell.gy, gx: cell.gx }), { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (detail) {
          box.textContent = "";
          element("h3", count(text.requests, detail.count), box);
          var list = element("ul", null, box);
          detail.top_categories.forEach(function (category) {
            element("li", category.name + ": " + number(category.count), list);
          });
          element("p", format(text.medianResponse, { value: hours(detail.median_response_hours) }), box);
          element("p", format(text.medianResolution, { value: hours(detail.median_resolution_hours) }), box);
          var link = element("a", text.openInAdmin, box);
          link.href = detail.admin_url;
          rectangle.getPopup().update();
        })
        .catch(function () { box.textContent = text.detailUnavailable; });
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
        var tip = element("span", cellValue(data.metric, cell.value));
        rectangle.bindTooltip(tip);
        rectangle.on("click", function () { showCell(cell, data.zoom, rectangle); });
        rectangle.addTo(layer);
      });
      var caption = [count(text.cells, data.cells.length), count(text.requests, total)];
      if (data.as_of) caption.push(format(text.asOf, { time: clock.format(new Date(data.as_of)) }));
      status.textContent = caption.join(" · ");
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
      status.textContent = text.loading;
      fetch(url(settings.grid_url, params), { credentials: "same-origin", signal: pending.signal })
        .then(function (response) { return response.json(); })
        .then(draw)
        .catch(function (error) { if (error.name !== "AbortError") status.textContent = text.mapUnavailable; });
    }

    map.on("moveend", load);
    metricSelect.addEventListener("change", load);
    load();
  };
})();

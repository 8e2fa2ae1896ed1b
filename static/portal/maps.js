/* Maps on the resident portal. Everything here is progressive: without JavaScript the
   forms still work (an address instead of a pin). User text never reaches innerHTML. */
(function () {
  "use strict";

  function readJSON(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  // Words shown by the maps: the page passes them translated in its "map-settings"
  // (views._map_settings); these English ones stand in for any it leaves out.
  var TEXT = {
    openRequest: "open request",
    openRequests: "open requests",
    pinPlaced: "Pin placed at",
    finding: "Finding your location…",
    unavailable: "Your location is not available. Tap the map or type an address.",
    // The report form's (views._report_map_settings).
    outside: "That place is outside the area we serve.",
    outsideYou: "You seem to be outside the area we serve. Tap the map or type an address.",
    pinKept: "The pin stays where it was."
  };
  var translated = (readJSON("map-settings") || {}).text;
  if (translated) Object.keys(TEXT).forEach(function (key) {
    if (translated[key]) TEXT[key] = translated[key];
  });

  // The first view is set without animation: django-leaflet has just drawn the map at its
  // default zoom, and an animated jump from there leaves the scale bar showing the old zoom
  // (and fetches a screenful of tiles nobody sees).
  var NOW = { animate: false };

  function fitServiceArea(map) {
    var settings = readJSON("map-settings");
    if (settings && settings.bounds) map.fitBounds(settings.bounds, NOW);
  }

  // Whether a place is inside the area the city serves: within the bounds and, when the
  // page gives the area's polygon, inside it. Only to tell the resident at once; the
  // server checks the position again when the form is sent.
  function inServiceArea(lat, lng) {
    var settings = readJSON("map-settings") || {};
    var bounds = settings.bounds;
    if (bounds && (lat < bounds[0][0] || lat > bounds[1][0] ||
                   lng < bounds[0][1] || lng > bounds[1][1])) return false;
    var area = settings.area;
    var polygons = !area ? null
      : area.type === "Polygon" ? [area.coordinates]
      : area.type === "MultiPolygon" ? area.coordinates : null;
    if (!polygons) return true;
    return polygons.some(function (rings) { return insideRings(rings, lng, lat); });
  }

  // The even-odd rule over a polygon's outer ring and its holes (GeoJSON: [lng, lat]).
  function insideRings(rings, x, y) {
    var inside = false;
    rings.forEach(function (ring) {
      for (var i = 0, j = ring.length - 1; i < ring.length; j = i++) {
        var xi = ring[i][0], yi = ring[i][1], xj = ring[j][0], yj = ring[j][1];
        if ((yi > y) !== (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) inside = !inside;
      }
    });
    return inside;
  }

  window.civicdeskHomeMap = function (map) {
    fitServiceArea(map);
    // An address picked in the search box above the map (address.js).
    var found = null;
    document.addEventListener("civicdesk:address-picked", function (event) {
      var place = event.detail;
      if (found) found.setLatLng([place.lat, place.lng]);
      else found = L.marker([place.lat, place.lng], { keyboard: false }).addTo(map);
      map.setView([place.lat, place.lng], place.kind === "street" ? 16 : 18);
    });
    var cells = readJSON("map-cells") || [];
    cells.forEach(function (cell) {
      var radius = Math.min(28, 8 + Math.sqrt(cell.count) * 4);
      var marker = L.circleMarker([cell.lat, cell.lng], {
        radius: radius, color: "#1d4ed8", weight: 1, fillOpacity: 0.45
      }).addTo(map);
      var label = document.createElement("span");
      label.textContent = cell.count + " " + (cell.count === 1 ? TEXT.openRequest : TEXT.openRequests);
      marker.bindTooltip(label);
    });
  };

  window.civicdeskStatusMap = function (map) {
    var marker = readJSON("map-marker");
    if (!marker) return;
    map.setView([marker.lat, marker.lng], 16, NOW);
    L.marker([marker.lat, marker.lng], { keyboard: false }).addTo(map);
  };

  // The crew's open work orders, one pin each; the popup links to the work order.
  window.civicdeskCrewMap = function (map) {
    var markers = readJSON("crew-markers") || [];
    if (!markers.length) {
      fitServiceArea(map);
      return;
    }
    var bounds = [];
    markers.forEach(function (item) {
      var link = document.createElement("a");
      link.href = item.url;
      link.textContent = item.label;
      L.marker([item.lat, item.lng], { keyboard: false, title: item.label })
        .bindPopup(link)
        .addTo(map);
      bounds.push([item.lat, item.lng]);
    });
    map.fitBounds(bounds, { animate: false, maxZoom: 16, padding: [24, 24] });
  };

  window.civicdeskReportMap = function (map) {
    var latInput = document.getElementById("id_lat");
    var lngInput = document.getElementById("id_lng");
    var statusText = document.getElementById("location-status");
    var locateButton = document.getElementById("use-my-location");
    var pin = null;

    function say(message, isError) {
      statusText.textContent = message;
      statusText.classList.toggle("location-status-error", Boolean(isError));
    }

    // A place outside the area served gets no pin: one that was placed before stays (a
    // dragged pin goes back to it), and the resident is told at once, not after sending.
    function refuse(source) {
      var message = source === "device" ? TEXT.outsideYou : TEXT.outside;
      if (pin && latInput.value && lngInput.value) {
        pin.setLatLng([parseFloat(latInput.value), parseFloat(lngInput.value)]);
        message += " " + TEXT.pinKept;
      } else {
        latInput.value = "";
        lngInput.value = "";
      }
      say(message, true);
    }

    // `source` says who placed the pin ("map", "device", "search", "initial"): address.js
    // fills in the address at the pin except after a search, which filled it already.
    // False when the place is outside the area served and no pin was placed there.
    function place(lat, lng, zoom, options, source) {
      if (!inServiceArea(lat, lng)) {
        refuse(source);
        return false;
      }
      latInput.value = lat.toFixed(6);
      lngInput.value = lng.toFixed(6);
      if (pin) pin.setLatLng([lat, lng]);
      else {
        pin = L.marker([lat, lng], { draggable: true }).addTo(map);
        pin.on("dragend", function () {
          var position = pin.getLatLng();
          place(position.lat, position.lng, null, null, "map");
        });
      }
      if (zoom) map.setView([lat, lng], zoom, options);
      say(TEXT.pinPlaced + " " + lat.toFixed(5) + ", " + lng.toFixed(5));
      document.dispatchEvent(new CustomEvent("civicdesk:location", {
        detail: { lat: lat, lng: lng, source: source || "map" }
      }));
      return true;
    }

    var initialLat = parseFloat(latInput.value), initialLng = parseFloat(lngInput.value);
    if (!(isFinite(initialLat) && isFinite(initialLng) &&
          place(initialLat, initialLng, 17, NOW, "initial"))) {
      fitServiceArea(map);
    }
    map.on("click", function (event) { place(event.latlng.lat, event.latlng.lng, null, null, "map"); });
    document.addEventListener("civicdesk:address-picked", function (event) {
      var found = event.detail;
      place(found.lat, found.lng, found.kind === "street" ? 17 : 18, null, "search");
    });

    if (navigator.geolocation && locateButton) {
      locateButton.hidden = false;
      locateButton.addEventListener("click", function () {
        say(TEXT.finding);
        navigator.geolocation.getCurrentPosition(
          function (position) {
            place(position.coords.latitude, position.coords.longitude, 17, null, "device");
          },
          function () { say(TEXT.unavailable); },
          { enableHighAccuracy: true, timeout: 10000 }
        );
      });
    }
  };
})();

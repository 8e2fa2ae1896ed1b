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
    unavailable: "Your location is not available. Tap the map or type an address."
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

    // `source` says who placed the pin ("map", "device", "search", "initial"): address.js
    // fills in the address at the pin except after a search, which filled it already.
    function place(lat, lng, zoom, options, source) {
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
      statusText.textContent = TEXT.pinPlaced + " " + lat.toFixed(5) + ", " + lng.toFixed(5);
      document.dispatchEvent(new CustomEvent("civicdesk:location", {
        detail: { lat: lat, lng: lng, source: source || "map" }
      }));
    }

    if (latInput.value && lngInput.value) {
      place(parseFloat(latInput.value), parseFloat(lngInput.value), 17, NOW, "initial");
    } else {
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
        statusText.textContent = TEXT.finding;
        navigator.geolocation.getCurrentPosition(
          function (position) {
            place(position.coords.latitude, position.coords.longitude, 17, null, "device");
          },
          function () { statusText.textContent = TEXT.unavailable; },
          { enableHighAccuracy: true, timeout: 10000 }
        );
      });
    }
  };
})();

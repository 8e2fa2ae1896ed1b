/* Maps on the resident portal. Everything here is progressive: without JavaScript the
   forms still work (an address instead of a pin). User text never reaches innerHTML. */
(function () {
  "use strict";

  function readJSON(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function fitServiceArea(map) {
    var settings = readJSON("map-settings");
    if (settings && settings.bounds) map.fitBounds(settings.bounds);
  }

  window.civicdeskHomeMap = function (map) {
    fitServiceArea(map);
    var cells = readJSON("map-cells") || [];
    cells.forEach(function (cell) {
      var radius = Math.min(28, 8 + Math.sqrt(cell.count) * 4);
      var marker = L.circleMarker([cell.lat, cell.lng], {
        radius: radius, color: "#1d4ed8", weight: 1, fillOpacity: 0.45
      }).addTo(map);
      var label = document.createElement("span");
      label.textContent = cell.count + (cell.count === 1 ? " open request" : " open requests");
      marker.bindTooltip(label);
    });
  };

  window.civicdeskStatusMap = function (map) {
    var marker = readJSON("map-marker");
    if (!marker) return;
    map.setView([marker.lat, marker.lng], 16);
    L.marker([marker.lat, marker.lng], { keyboard: false }).addTo(map);
  };

  window.civicdeskReportMap = function (map) {
    var latInput = document.getElementById("id_lat");
    var lngInput = document.getElementById("id_lng");
    var statusText = document.getElementById("location-status");
    var locateButton = document.getElementById("use-my-location");
    var pin = null;

    function place(lat, lng, zoom) {
      latInput.value = lat.toFixed(6);
      lngInput.value = lng.toFixed(6);
      if (pin) pin.setLatLng([lat, lng]);
      else {
        pin = L.marker([lat, lng], { draggable: true }).addTo(map);
        pin.on("dragend", function () {
          var position = pin.getLatLng();
          place(position.lat, position.lng);
        });
      }
      if (zoom) map.setView([lat, lng], zoom);
      statusText.textContent = "Pin placed at " + lat.toFixed(5) + ", " + lng.toFixed(5);
      document.dispatchEvent(new CustomEvent("civicdesk:location", { detail: { lat: lat, lng: lng } }));
    }

    if (latInput.value && lngInput.value) {
      place(parseFloat(latInput.value), parseFloat(lngInput.value), 17);
    } else {
      fitServiceArea(map);
    }
    map.on("click", function (event) { place(event.latlng.lat, event.latlng.lng); });

    if (navigator.geolocation && locateButton) {
      locateButton.hidden = false;
      locateButton.addEventListener("click", function () {
        statusText.textContent = "Finding your location…";
        navigator.geolocation.getCurrentPosition(
          function (position) { place(position.coords.latitude, position.coords.longitude, 17); },
          function () { statusText.textContent = "Your location is not available. Tap the map or type an address."; },
          { enableHighAccuracy: true, timeout: 10000 }
        );
      });
    }
  };
})();

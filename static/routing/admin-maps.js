/* Maps in the staff admin: district boundary editor, point picker and point view.
   Configuration arrives in data- attributes; nothing here builds HTML from user text. */
(function () {
  "use strict";

  function baseMap(element) {
    var map = L.map(element);
    L.tileLayer(element.dataset.tiles, { maxZoom: 19, attribution: "© OpenStreetMap" }).addTo(map);
    var bounds = JSON.parse(element.dataset.bounds || "null");
    if (bounds) map.fitBounds(bounds);
    return map;
  }

  function districtEditor(element) {
    var textarea = document.getElementById(element.dataset.textarea);
    var map = baseMap(element);
    var drawn = new L.FeatureGroup().addTo(map);
    try {
      var current = JSON.parse(textarea.value || "null");
      if (current) {
        L.geoJSON(current).eachLayer(function (layer) { drawn.addLayer(layer); });
        if (drawn.getLayers().length) map.fitBounds(drawn.getBounds());
      }
    } catch (error) { /* invalid JSON stays in the textarea for the form to report */ }

    map.addControl(new L.Control.Draw({
      edit: { featureGroup: drawn },
      draw: { polygon: true, rectangle: true, polyline: false, circle: false, marker: false, circlemarker: false }
    }));

    function save() {
      var polygons = [];
      drawn.eachLayer(function (layer) {
        var geometry = layer.toGeoJSON().geometry;
        if (geometry.type === "Polygon") polygons.push(geometry.coordinates);
        if (geometry.type === "MultiPolygon") polygons = polygons.concat(geometry.coordinates);
      });
      if (polygons.length === 0) textarea.value = "";
      else if (polygons.length === 1) textarea.value = JSON.stringify({ type: "Polygon", coordinates: polygons[0] });
      else textarea.value = JSON.stringify({ type: "MultiPolygon", coordinates: polygons });
    }
    map.on(L.Draw.Event.CREATED, function (event) { drawn.addLayer(event.layer); save(); });
    map.on(L.Draw.Event.EDITED, save);
    map.on(L.Draw.Event.DELETED, save);
  }

  function pointPicker(element) {
    var lat = document.getElementById(element.dataset.lat);
    var lng = document.getElementById(element.dataset.lng);
    var map = baseMap(element);
    var marker = null;
    function place(latitude, longitude) {
      lat.value = latitude.toFixed(6);
      lng.value = longitude.toFixed(6);
      if (marker) marker.setLatLng([latitude, longitude]);
      else marker = L.marker([latitude, longitude]).addTo(map);
    }
    if (lat.value && lng.value) {
      place(parseFloat(lat.value), parseFloat(lng.value));
      map.setView([parseFloat(lat.value), parseFloat(lng.value)], 15);
    }
    map.on("click", function (event) { place(event.latlng.lat, event.latlng.lng); });
  }

  function pointView(element) {
    var map = baseMap(element);
    var position = [parseFloat(element.dataset.pointLat), parseFloat(element.dataset.pointLng)];
    map.setView(position, 16);
    L.marker(position).addTo(map);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".district-map").forEach(districtEditor);
    document.querySelectorAll(".point-picker").forEach(pointPicker);
    document.querySelectorAll(".point-view").forEach(pointView);
  });
})();

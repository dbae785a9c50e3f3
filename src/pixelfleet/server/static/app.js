// pixelfleet's pages: maps (Leaflet and a Natural Earth world outline, both vendored under
// /static/vendor/, so nothing comes from the internet unless a basemap URL is set), hover
// linking between the map and the list, drawing an area as the bbox filter, copy buttons.
//
// The pages work without this file (server-rendered lists of links); it only adds to them.
//
// Live updates: code that learns of new, changed or deleted items (a server-sent events
// stream, say) calls, on the search page,
//
//     pixelfleet.addItem(feature)   // a STAC Item as the API returns it; replaces one with its id
//     pixelfleet.removeItem(id)     // takes the item off the map and out of the list
//
// and both keep the map, the lists and their counts in step.
(function () {
  "use strict";
  var pf = (window.pixelfleet = window.pixelfleet || {});

  var WORLD = "/static/vendor/world-atlas/countries-110m.geojson";
  var FOOTPRINT = { color: "#1f5fbf", weight: 2, fill: true, fillOpacity: 0.06 };
  var HIGHLIGHT = { color: "#c2410c", weight: 4, fill: true, fillOpacity: 0.18 };
  var MARKER = { radius: 6, color: "#ffffff", weight: 2, fillColor: "#1f5fbf", fillOpacity: 1 };
  var MARKER_ON = { radius: 9, color: "#ffffff", weight: 2, fillColor: "#c2410c", fillOpacity: 1 };
  // A footprint smaller than this on screen (pixels) also gets a dot, so it can be seen.
  var SMALL = 16;

  // Thumbnails that fail to load become a visible placeholder instead of a broken image.
  function guardImage(img) {
    function broken() {
      var span = document.createElement("span");
      span.className = "none";
      span.textContent = "thumbnail unavailable";
      img.replaceWith(span);
    }
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) {
      broken();
    } else {
      img.addEventListener("error", broken);
    }
  }
  document.querySelectorAll(".thumb img, .big img").forEach(guardImage);

  // Changing a menu or a date searches straight away.
  document.querySelectorAll("form.search select, form.search input[type=date]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  // [west, south, east, north] as Leaflet bounds; a bbox across the antimeridian
  // (west > east) continues east of 180 so it is drawn in one piece.
  function boundsOf(bbox) {
    var east = bbox[2] < bbox[0] ? bbox[2] + 360 : bbox[2];
    return L.latLngBounds([bbox[1], bbox[0]], [bbox[3], east]);
  }

  // A map with the world outline (and the site's basemap, if one is configured).
  function makeMap(el, options) {
    var basemap = el.getAttribute("data-basemap");
    var map = L.map(el, Object.assign({
      boxZoom: false,  // shift-drag draws an area instead
      minZoom: 1,
      maxZoom: 22,
      zoomSnap: 0.25,
      worldCopyJump: true,
      attributionControl: Boolean(basemap),
    }, options || {}));
    map.createPane("world").style.zIndex = 250;   // above basemap tiles (200)
    map.createPane("thumbs").style.zIndex = 350;  // below footprints (overlayPane, 400)
    if (basemap) {
      L.tileLayer(basemap, { maxZoom: 22, maxNativeZoom: 19, attribution: "basemap" }).addTo(map);
    }
    fetch(WORLD).then(function (r) { return r.json(); }).then(function (world) {
      L.geoJSON(world, {
        pane: "world",
        interactive: false,
        style: {
          color: "#7d8fa3", weight: 0.8,
          fillColor: "#eef1ec", fillOpacity: basemap ? 0 : 1,
        },
      }).addTo(map);
    }).catch(function () { /* the map still shows the results without an outline */ });
    return map;
  }

  // Footprint, thumbnail and dot of one entry ({id, title, href, thumb, bbox, geometry}).
  function drawEntry(map, entry) {
    var bounds = boundsOf(entry.bbox);
    var layers = { bounds: bounds, overlay: null };
    if (entry.thumb) {
      layers.overlay = L.imageOverlay(entry.thumb, bounds, {
        pane: "thumbs", alt: "Thumbnail of " + entry.title, className: "thumb-overlay",
      }).addTo(map);
    }
    layers.outline = L.geoJSON(entry.geometry, { style: FOOTPRINT }).addTo(map);
    layers.marker = L.circleMarker(bounds.getCenter(), MARKER);
    // Leaflet makes a path with a tooltip focusable (Tab), and shows the tooltip on focus.
    layers.outline.bindTooltip(entry.title, { sticky: true });
    return layers;
  }

  function removeLayers(map, layers) {
    ["overlay", "outline", "marker"].forEach(function (name) {
      if (layers[name]) { map.removeLayer(layers[name]); }
    });
  }

  // Show a dot where a footprint is too small to see at this zoom.
  function updateMarker(map, layers) {
    var a = map.latLngToLayerPoint(layers.bounds.getSouthWest());
    var b = map.latLngToLayerPoint(layers.bounds.getNorthEast());
    var small = Math.abs(b.x - a.x) < SMALL && Math.abs(b.y - a.y) < SMALL;
    if (small && !map.hasLayer(layers.marker)) { layers.marker.addTo(map); }
    if (!small && map.hasLayer(layers.marker)) { map.removeLayer(layers.marker); }
  }

  // A bbox filter from drawn bounds: longitudes wrapped into -180..180 (a box across the
  // antimeridian keeps west > east), latitudes clamped, 5 decimals (about a metre).
  function bboxText(bounds) {
    var south = Math.max(-90, bounds.getSouth()), north = Math.min(90, bounds.getNorth());
    var width = bounds.getEast() - bounds.getWest(), west, east;
    if (width >= 360) {
      west = -180; east = 180;
    } else {
      west = ((bounds.getWest() + 180) % 360 + 360) % 360 - 180;
      east = west + width;
      if (east > 180) { east -= 360; }
    }
    return [west, south, east, north].map(function (v) { return Number(v.toFixed(5)); }).join(",");
  }

  function copyText(text, status) {
    function done(ok) {
      status.textContent = ok ? "Copied." : "Could not copy: select the text and copy it.";
      setTimeout(function () { status.textContent = ""; }, 4000);
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }

  // ---- the search page ------------------------------------------------------------------

  function initSearch(el) {
    var map = makeMap(el);
    var placed = {};  // id -> {entry, layers}
    var form = document.getElementById("search-form");
    var bboxInput = document.getElementById("bbox");
    var listPanel = document.querySelector(".list-panel");

    function cardOf(id) {
      return document.querySelector('.card[data-id="' + CSS.escape(id) + '"]');
    }

    // Scroll the results panel (not the page) so a card is in sight.
    function reveal(card) {
      if (!listPanel || listPanel.scrollHeight <= listPanel.clientHeight) { return; }
      var top = card.offsetTop;
      if (top < listPanel.scrollTop || top + card.offsetHeight > listPanel.scrollTop + listPanel.clientHeight) {
        listPanel.scrollTo({ top: Math.max(0, top - 12), behavior: "smooth" });
      }
    }

    // keepOrder: a footprint that has the keyboard focus must stay where it is in the
    // document (bringToFront moves the element, which drops the focus).
    function highlight(id, on, fromMap, keepOrder) {
      var rec = placed[id];
      if (rec) {
        rec.layers.outline.setStyle(on ? HIGHLIGHT : FOOTPRINT);
        rec.layers.marker.setStyle(on ? MARKER_ON : MARKER);
        if (on && !keepOrder) { rec.layers.outline.bringToFront(); rec.layers.marker.bringToFront(); }
      }
      var card = cardOf(id);
      if (card) {
        card.classList.toggle("hl", on);
        if (on && fromMap) { reveal(card); }
      }
    }

    function bindCard(card) {
      var id = card.getAttribute("data-id");
      card.addEventListener("mouseenter", function () { highlight(id, true, false); });
      card.addEventListener("mouseleave", function () { highlight(id, false, false); });
      card.addEventListener("focusin", function () { highlight(id, true, false); });
      card.addEventListener("focusout", function () { highlight(id, false, false); });
      card.querySelectorAll("img").forEach(guardImage);
    }

    function place(entry) {
      var layers = drawEntry(map, entry);
      [layers.outline, layers.marker].forEach(function (layer) {
        layer.on("mouseover", function () { highlight(entry.id, true, true); });
        layer.on("mouseout", function () { highlight(entry.id, false, true); });
        layer.on("click", function () { window.location.href = entry.href; });
      });
      // A footprint reached with Tab: highlighted like a hover, Enter opens the item.
      // (Paths exist once the map has a view: Leaflet adds layers then, firing "add".)
      layers.outline.eachLayer(function (layer) {
        if (layer.getElement && layer.getElement()) {
          wire(layer.getElement());
        } else {
          layer.once("add", function () { wire(layer.getElement()); });
        }
      });
      function wire(path) {
        path.setAttribute("role", "link");
        path.setAttribute("aria-label", "Footprint of " + entry.title);
        path.addEventListener("focus", function () { highlight(entry.id, true, true, true); });
        path.addEventListener("blur", function () { highlight(entry.id, false, true, true); });
        path.addEventListener("keydown", function (ev) {
          if (ev.key === "Enter") { window.location.href = entry.href; }
        });
      }
      placed[entry.id] = { entry: entry, layers: layers };
      if (viewSet) { updateMarker(map, layers); }
    }

    function fit() {
      var bounds = null;
      Object.keys(placed).forEach(function (id) {
        var b = placed[id].layers.bounds;
        bounds = bounds ? bounds.extend(b) : L.latLngBounds(b.getSouthWest(), b.getNorthEast());
      });
      if (filterBox) { bounds = bounds ? bounds.extend(filterBox) : filterBox; }
      if (bounds) {
        map.fitBounds(bounds, { padding: [28, 28], maxZoom: 17 });
      } else {
        map.setView([20, 0], 1.5);
      }
    }

    // The bbox filter, drawn dashed.
    var filterBox = null;
    var parts = (el.getAttribute("data-bbox") || "").split(",").map(Number);
    if (parts.length === 4 && parts.every(isFinite)) {
      filterBox = boundsOf(parts);
      L.rectangle(filterBox, {
        color: "#c2410c", weight: 2, dashArray: "6 5", fill: false, interactive: false,
      }).addTo(map);
    }

    var viewSet = false;
    function updateMarkers() {
      Object.keys(placed).forEach(function (id) { updateMarker(map, placed[id].layers); });
    }
    (readJSON("map-entries") || []).forEach(place);
    document.querySelectorAll(".card").forEach(bindCard);
    fit();
    viewSet = true;
    updateMarkers();
    map.on("zoomend", updateMarkers);

    // Drawing an area: shift-drag, or "Draw area" then drag (mouse, pen or touch).
    var drawButton = document.getElementById("draw-area");
    var viewButton = document.getElementById("view-area");
    var drawMode = false, start = null, box = null;
    function setDrawMode(on) {
      drawMode = on;
      drawButton.setAttribute("aria-pressed", String(on));
      el.classList.toggle("drawing", on);
    }
    function search(bounds) {
      bboxInput.value = bboxText(bounds);
      form.submit();
    }
    drawButton.hidden = false;
    viewButton.hidden = false;
    drawButton.addEventListener("click", function () { setDrawMode(!drawMode); });
    viewButton.addEventListener("click", function () { search(map.getBounds()); });
    document.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && (drawMode || start)) {
        if (box) { map.removeLayer(box); }
        start = box = null;
        setDrawMode(false);
      }
    });
    el.addEventListener("pointerdown", function (ev) {
      if (!(drawMode || ev.shiftKey) || ev.button !== 0 || ev.target.closest(".leaflet-control")) {
        return;
      }
      ev.preventDefault();
      ev.stopPropagation();
      start = map.mouseEventToLatLng(ev);
      box = L.rectangle(L.latLngBounds(start, start), {
        color: "#c2410c", weight: 2, dashArray: "6 5", fillOpacity: 0.1, interactive: false,
      }).addTo(map);
      el.setPointerCapture(ev.pointerId);
    }, true);
    el.addEventListener("pointermove", function (ev) {
      if (!start) { return; }
      ev.stopPropagation();
      box.setBounds(L.latLngBounds(start, map.mouseEventToLatLng(ev)));
    }, true);
    el.addEventListener("pointerup", function (ev) {
      if (!start) { return; }
      ev.stopPropagation();
      var bounds = box.getBounds();
      var a = map.latLngToContainerPoint(bounds.getSouthWest());
      var b = map.latLngToContainerPoint(bounds.getNorthEast());
      start = null;
      if (Math.abs(b.x - a.x) < 4 || Math.abs(b.y - a.y) < 4) {  // a click, not an area
        map.removeLayer(box);
        box = null;
        return;
      }
      search(bounds);
    }, true);
    // Keep Leaflet from panning while an area is drawn.
    ["mousedown", "touchstart"].forEach(function (type) {
      el.addEventListener(type, function (ev) {
        if (drawMode || ev.shiftKey || start) { ev.stopPropagation(); }
      }, true);
    });

    // ---- live updates -------------------------------------------------------------------

    function entryOf(feature) {
      var props = feature.properties || {};
      var assets = feature.assets || {};
      var collection = feature.collection || "";
      var thumb = null;
      Object.keys(assets).forEach(function (name) {
        var asset = assets[name];
        if (!thumb && (asset.roles || []).indexOf("thumbnail") >= 0) {
          thumb = /^https?:\/\//.test(asset.href) ? asset.href
            : "/assets/" + encodeURIComponent(collection) + "/" + encodeURIComponent(name) + "/" + encodeURI(feature.id);
        }
      });
      var page = (feature.links || []).filter(function (l) {
        return l.rel === "alternate" && l.type === "text/html";
      })[0];
      var bbox = feature.bbox && feature.geometry ? feature.bbox : null;
      if (bbox && bbox.length === 6) { bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]; }
      return {
        id: feature.id,
        collection: collection,
        title: props.title || feature.id,
        href: page ? page.href : "/items/" + encodeURIComponent(collection) + "/" + encodeURI(feature.id),
        thumb: thumb,
        bbox: bbox,
        geometry: feature.geometry,
        when: String(props.datetime || props.start_datetime || "").slice(0, 10),
      };
    }

    function makeCard(entry) {
      var card = document.getElementById("card-template").content.firstElementChild.cloneNode(true);
      card.setAttribute("data-id", entry.id);
      var img = card.querySelector("img");
      if (entry.thumb) {
        img.src = entry.thumb;
        img.alt = "Thumbnail of " + entry.title;
      } else {
        var none = document.createElement("span");
        none.className = "none";
        none.textContent = "no thumbnail";
        img.replaceWith(none);
      }
      var title = card.querySelector(".title");
      title.href = entry.href;
      title.textContent = entry.title;
      title.title = entry.id;
      card.querySelector(".when").textContent = entry.when;
      card.querySelector(".collection").textContent = entry.collection;
      card.querySelector(".key").textContent = entry.id;
      return card;
    }

    function recount() {
      ["results", "unplaced"].forEach(function (listId) {
        var list = document.getElementById(listId);
        var heading = document.getElementById(listId === "results" ? "placed-heading" : "unplaced-heading");
        var count = document.getElementById(listId === "results" ? "placed-count" : "unplaced-count");
        var n = list.querySelectorAll(".card").length;
        list.hidden = heading.hidden = n === 0;
        count.textContent = String(n);
      });
    }

    pf.addItem = function (feature) {
      pf.removeItem(feature.id);
      var entry = entryOf(feature);
      var card = makeCard(entry);
      var list = document.getElementById(entry.bbox ? "results" : "unplaced");
      list.insertBefore(card, list.firstChild);
      bindCard(card);
      if (entry.bbox) { place(entry); }
      recount();
      return card;
    };

    pf.removeItem = function (id) {
      var rec = placed[id];
      if (rec) {
        removeLayers(map, rec.layers);
        delete placed[id];
      }
      var card = cardOf(id);
      if (card) { card.remove(); }
      recount();
    };

    pf.map = map;
    // Once the page has settled: a stream opened at once would keep it "loading" for tools
    // that wait for the network to go quiet.
    window.addEventListener("load", function () { setTimeout(listen, 1500); });
  }

  // Items a watcher adds, changes or removes while the page is open (GET /live, server-sent
  // events). A changed item on the page is redrawn and a removed one goes; a new item is
  // added to a search without filters (with filters, it may not match: reload to see).
  function listen() {
    if (!window.EventSource || !window.fetch) { return; }
    var params = new URLSearchParams(window.location.search);
    var filtered = false;
    params.forEach(function (value, name) {
      if (value && name !== "sort" && name !== "limit") { filtered = true; }
    });
    var source = new EventSource("/live");
    source.addEventListener("item", function (ev) {
      var change = JSON.parse(ev.data);
      var shown = !!document.querySelector('.card[data-id="' + CSS.escape(change.id) + '"]');
      if (!shown && filtered) { return; }
      var url = "/stac/collections/" + encodeURIComponent(change.collection) + "/items/" +
        change.id.split("/").map(encodeURIComponent).join("/");
      fetch(url).then(function (r) { return r.ok ? r.json() : null; }).then(function (feature) {
        if (!feature) { return; }
        var card = pf.addItem(feature);
        card.classList.add("fresh");
        setTimeout(function () { card.classList.remove("fresh"); }, 4000);
      }).catch(function () { /* the next change or a reload shows it */ });
    });
    source.addEventListener("removed", function (ev) { pf.removeItem(JSON.parse(ev.data).id); });
    pf.live = source;
  }

  // ---- the item page --------------------------------------------------------------------

  function initItem(el) {
    var entry = readJSON("item-entry");
    var map = makeMap(el);
    var layers = drawEntry(map, entry);
    map.fitBounds(layers.bounds, { padding: [30, 30], maxZoom: 19 });
    updateMarker(map, layers);
    map.on("zoomend", function () { updateMarker(map, layers); });
    pf.map = map;

    var locatorEl = document.getElementById("locator");
    if (locatorEl) {
      var locator = makeMap(locatorEl, {
        zoomControl: false, dragging: false, scrollWheelZoom: false, doubleClickZoom: false,
        touchZoom: false, keyboard: false, attributionControl: false, minZoom: 0,
      });
      locator.setView(layers.bounds.getCenter(), 0);
      L.rectangle(layers.bounds, { color: "#c2410c", weight: 2, interactive: false }).addTo(locator);
      L.circleMarker(layers.bounds.getCenter(), Object.assign({}, MARKER_ON, { interactive: false })).addTo(locator);
    }
  }

  function initCopy() {
    var status = document.getElementById("copy-status");
    var json = document.getElementById("copy-json");
    var code = document.getElementById("copy-snippet");
    if (json) {
      json.hidden = false;
      json.addEventListener("click", function () { copyText(readJSON("item-json"), status); });
    }
    if (code) {
      code.hidden = false;
      code.addEventListener("click", function () {
        copyText(document.getElementById("snippet").textContent, status);
      });
    }
  }

  if (window.L) {
    var searchMap = document.getElementById("map");
    if (searchMap) { initSearch(searchMap); }
    var itemMap = document.getElementById("item-map");
    if (itemMap) { initItem(itemMap); }
  }
  initCopy();
})();

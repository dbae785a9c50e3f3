// Thumbnails that fail to load become a visible placeholder instead of a broken image.
document.querySelectorAll(".thumb img, .big img").forEach(function (img) {
  function broken() {
    var span = document.createElement("span");
    span.className = "none";
    span.textContent = "thumbnail unavailable";
    img.replaceWith(span);
  }
  if (img.complete && img.naturalWidth === 0) { broken(); } else { img.addEventListener("error", broken); }
});
// Changing a filter searches straight away.
document.querySelectorAll("form.search select, form.search input[type=date]").forEach(function (el) {
  el.addEventListener("change", function () { el.form.submit(); });
});

// Progressive enhancement only: every page works without this script.
// The dates of the filter form are sent only when filled in (cleaner, shareable URLs).
document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form.filters");
  if (!form) { return; }
  form.addEventListener("submit", function () {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name && el.value === "") { el.disabled = true; }
    });
  });
});

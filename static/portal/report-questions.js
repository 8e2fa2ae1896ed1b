/* The report form's per-category questions: only the chosen category's are shown, right
   below the category. Progressive: without JavaScript the page shows every category's
   questions, each group saying which problem it is about, and the server reads only the
   chosen category's answers. Hidden groups keep what was typed in them, for a resident who
   changes the category back. */
(function () {
  "use strict";

  var category = document.getElementById("id_category");
  var box = document.querySelector("[data-category-questions]");
  if (!category || !box) return;
  var groups = box.querySelectorAll("[data-questions-for]");

  // "Only if the problem is …": true of every group without JavaScript, and of none with it.
  box.querySelectorAll("[data-questions-hint]").forEach(function (hint) { hint.hidden = true; });

  function show() {
    var shown = false;
    groups.forEach(function (group) {
      group.hidden = group.getAttribute("data-questions-for") !== category.value;
      shown = shown || !group.hidden;
    });
    box.hidden = !shown;
  }

  category.addEventListener("change", show);
  show();
})();

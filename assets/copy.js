// The zone block's Copy button, when scripts run: select the lines and copy
// them. Without scripts, one click on the block selects it (CSS user-select).
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var block = document.getElementById(button.getAttribute("data-copy"));
  if (!block) return;
  var range = document.createRange();
  range.selectNodeContents(block);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  if (navigator.clipboard) {
    navigator.clipboard.writeText(block.textContent).then(function () {
      button.textContent = "Copied";
    });
  }
});

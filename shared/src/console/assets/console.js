// Refreshes the overview's tables every few seconds; without script, a reload does the same.
"use strict";
(function () {
  const live = document.getElementById("live");
  if (!live || !live.dataset.refresh) return;
  async function refresh() {
    try {
      const response = await fetch(live.dataset.refresh, { credentials: "same-origin" });
      if (response.redirected || !response.ok) return;
      live.innerHTML = await response.text();
    } catch (_) {
      // Offline for a moment: the next tick tries again.
    }
  }
  setInterval(refresh, 3000);
})();

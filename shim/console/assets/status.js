// Swap in the server-rendered live part every interval; a 401 means signed out.
const live = document.getElementById("live");
const every = Number(live.dataset.interval || 2) * 1000;
const updated = document.getElementById("updated");
const health = document.getElementById("health");
async function refresh() {
  try {
    const r = await fetch("/status/live", { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.reload(); return; }
    if (r.ok) {
      live.innerHTML = await r.text();
      const grid = live.querySelector("[data-health]");
      if (grid) health.className = "logo " + grid.dataset.health;
      updated.textContent = new Date().toISOString().slice(11, 19) + " UTC";
      document.body.classList.remove("stale");
    } else {
      document.body.classList.add("stale");
    }
  } catch (e) {
    document.body.classList.add("stale");
  }
  setTimeout(refresh, document.hidden ? every * 5 : every);
}
setTimeout(refresh, every);

// Launch page: the recipe is checked as you type (debounced) by the CLI's own loader on the server;
// each problem is listed with its line, and the lines with problems are named beside the editor.
const area = document.getElementById("recipe");
const out = document.getElementById("live-problems");
const csrf = document.querySelector("meta[name=csrf]").content;
let timer = null, seq = 0;

async function check() {
  const mine = ++seq;
  const r = await fetch("/api/validate", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({recipe: area.value})});
  if (!r.ok || mine !== seq) return;  // a newer check is on its way
  const {problems} = await r.json();
  out.replaceChildren();
  out.dataset.count = String(problems.length);
  if (!problems.length) { out.textContent = "recipe OK"; out.className = "live ok"; return; }
  out.className = "live problem";
  const list = document.createElement("ul");
  for (const p of problems) {
    const li = document.createElement("li");
    li.textContent = p;
    list.append(li);
  }
  out.append(list);
}

area.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 400); });

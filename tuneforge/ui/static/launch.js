// Launch page: the recipe is checked as you type (debounced) by the CLI's own loader on the server;
// each problem is listed with its line, and marked beside that line in the editor: the gutter's line
// number turns red and the message sits in the notes column on the same row. The textarea does not
// wrap lines, so row N of the gutter and notes is line N of the text.
const area = document.getElementById("recipe");
const out = document.getElementById("live-problems");
const gutter = document.getElementById("gutter"), notes = document.getElementById("notes");
const csrf = document.querySelector("meta[name=csrf]").content;
const LINE = /^recipe\.yaml:(\d+):\s*(.*)$/;
let timer = null, seq = 0, marks = new Map();

function byLine(problems) {
  const found = new Map();
  for (const p of problems) {
    const m = LINE.exec(p);
    if (!m) continue;
    const n = Number(m[1]);
    found.set(n, found.has(n) ? `${found.get(n)}; ${m[2]}` : m[2]);
  }
  return found;
}

function render() {
  const count = Math.max(area.value.split("\n").length, ...marks.keys(), 1);
  const rows = [], noteRows = [];
  for (let n = 1; n <= count; n++) {
    const row = document.createElement("div"), note = document.createElement("div");
    row.textContent = String(n);
    row.dataset.line = note.dataset.line = String(n);
    if (marks.has(n)) {
      row.className = note.className = "bad";
      row.title = note.textContent = note.title = marks.get(n);
    }
    rows.push(row); noteRows.push(note);
  }
  gutter.replaceChildren(...rows);
  notes.replaceChildren(...noteRows);
  gutter.dataset.marked = notes.dataset.marked = [...marks.keys()].sort((a, b) => a - b).join(",");
  sync();
}

function sync() { gutter.scrollTop = notes.scrollTop = area.scrollTop; }

async function check() {
  const mine = ++seq;
  const r = await fetch("/api/validate", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({recipe: area.value})});
  if (!r.ok || mine !== seq) return;  // a newer check is on its way
  const {problems} = await r.json();
  marks = byLine(problems);
  render();
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

marks = byLine(JSON.parse(document.getElementById("editor").dataset.problems || "[]"));  // after a submit
render();
area.addEventListener("input", () => { render(); clearTimeout(timer); timer = setTimeout(check, 400); });
area.addEventListener("scroll", sync);

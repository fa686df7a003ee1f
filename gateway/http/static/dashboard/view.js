// Figures into the page: the overview and productivity cards (`<dd data-figure="name">`), the
// trend table, and a short announcement for screen readers when something changed.

const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 1, maximumFractionDigits: 1,
});

const count = (value) => whole.format(value);
const decimal = (value) => value == null ? "–" : oneDecimal.format(value);
const percent = (value) => value == null ? "–" : `${oneDecimal.format(value)} %`;
const weekday = (value) => value == null ? "–" : value[0] + value.slice(1).toLowerCase();

/** How each figure is written: counts with thousands separators, rates and scores with one
 * decimal (as the API rounds them), "–" for null. */
export const FORMATS = {
  totalTasks: count, completedTasks: count, pendingTasks: count, inProgressTasks: count,
  overdueTasks: count, dueTodayTasks: count, completionRate: percent,
  score: decimal, tasksCompleted: count, averageTasksPerDay: decimal, currentStreak: count,
  longestStreak: count, daysGoalMet: count, onTimeRate: percent, leadTimeHours: decimal,
  mostProductiveWeekday: weekday,
};

/** Write `figures` into the cards of `list`; returns whether any text changed. */
function fillCards(list, figures, highlight) {
  let changed = false;
  for (const cell of list.querySelectorAll("[data-figure]")) {
    const name = cell.dataset.figure;
    const text = FORMATS[name](figures[name]);
    if (cell.textContent === text) continue;
    changed = true;
    cell.textContent = text;
    if (highlight) {
      cell.classList.remove("changed");
      void cell.offsetWidth; // restart the animation
      cell.classList.add("changed");
    }
  }
  return changed;
}

function fillTable(tbody, points) {
  const rows = points.map((point) => {
    const row = document.createElement("tr");
    const head = document.createElement("th");
    head.scope = "row";
    head.textContent = point.date;
    row.append(head);
    for (const text of [count(point.tasksCreated), count(point.tasksCompleted),
                        count(point.tasksDue), count(point.tasksCompletedOnTime),
                        decimal(point.productivityScore)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  tbody.replaceChildren(...rows);
}

export class FiguresView {
  constructor(root, chart) {
    this.overview = root.querySelector("#overview");
    this.productivity = root.querySelector("#productivity");
    this.table = root.querySelector("#trend-table tbody");
    this.trendRange = root.querySelector("#trend-range");
    this.productivityRange = root.querySelector("#productivity-range");
    this.updated = root.querySelector("#updated");
    this.chart = chart;
    this.shown = false;
  }

  /** Show `{ overview, trends, productivity }`. */
  render({ overview, trends, productivity }) {
    const first = !this.shown;
    const changed = [
      fillCards(this.overview, overview, !first),
      fillCards(this.productivity, productivity, !first),
    ].some(Boolean);
    this.trendRange.textContent = `(${trends.period.toLowerCase()}, ${trends.from} to ${trends.to})`;
    this.productivityRange.textContent = `(${productivity.from} to ${productivity.to})`;
    fillTable(this.table, trends.points);
    this.chart.update(trends);
    this.shown = true;
    const time = new Date().toLocaleTimeString("en-GB");
    if (first) {
      this.updated.textContent = `Figures as of ${time}.`;
    } else if (changed) {
      this.updated.textContent = `Figures updated at ${time}: ${count(overview.totalTasks)} ` +
        `tasks, ${count(overview.completedTasks)} completed.`;
    }
  }

  /** Back to dashes, for the next user. */
  clear() {
    for (const cell of document.querySelectorAll("[data-figure]")) cell.textContent = "–";
    this.table.replaceChildren();
    this.trendRange.textContent = "";
    this.productivityRange.textContent = "";
    this.updated.textContent = "";
    this.shown = false;
  }
}

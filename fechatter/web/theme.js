// The colour theme: Light, Dark, or System (the default: follows `prefers-color-scheme`). The
// choice is kept in this browser only (localStorage `fechatter.theme`); app.css holds both
// palettes, switched by `data-theme` on <html> (absent: the system's).

const KEY = "fechatter.theme";
const CHOICES = ["system", "light", "dark"];

export function themeChoice() {
  const stored = localStorage.getItem(KEY);
  return CHOICES.includes(stored) ? stored : "system";
}

// choice: "system" | "light" | "dark" (anything else means "system").
export function applyTheme(choice = themeChoice()) {
  const root = document.documentElement;
  if (choice === "light" || choice === "dark") {
    root.dataset.theme = choice;
    localStorage.setItem(KEY, choice);
  } else {
    delete root.dataset.theme;
    localStorage.removeItem(KEY);
  }
}

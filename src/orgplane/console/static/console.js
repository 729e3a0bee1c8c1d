// orgplane console: small enhancements; every page works without them.
"use strict";

// The tree: load a level when it is opened (a link to the org's page stands in without script).
async function loadLevel(details) {
  if (details.dataset.loaded) return;
  details.dataset.loaded = "1";
  const placeholder = details.querySelector(".loading");
  const response = await fetch(details.dataset.children, { credentials: "same-origin" });
  if (!response.ok) return;
  const html = await response.text();
  const level = new DOMParser().parseFromString(html, "text/html").querySelector("ul.tree");
  if (level && placeholder) placeholder.replaceWith(document.adoptNode(level));
  wire(details);
}

async function loadMore(link) {
  const response = await fetch(link.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const html = await response.text();
  const level = new DOMParser().parseFromString(html, "text/html").querySelector("ul.tree");
  const item = link.closest("li");
  for (const child of Array.from(level.children)) item.before(document.adoptNode(child));
  item.remove();
  wire(document);
}

function wire(root) {
  for (const details of root.querySelectorAll("details[data-children]:not([data-wired])")) {
    details.dataset.wired = "1";
    details.addEventListener("toggle", () => { if (details.open) loadLevel(details); });
  }
  for (const link of root.querySelectorAll("ul.tree a.more:not([data-wired])")) {
    link.dataset.wired = "1";
    link.addEventListener("click", (event) => { event.preventDefault(); loadMore(link); });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  // Copy a secret shown once.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    });
  }
  // Ask before a change that cannot be undone.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});

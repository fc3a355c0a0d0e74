// What the dashboard (dashboard.js) and the operator console (ops.js) share: building elements from API
// data as text only, never as HTML, and the error a failed API call raises. Loaded before either page script.
"use strict";

window.payrunPage = (() => {
  class ApiError extends Error {
    constructor(status, problem, response) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
      this.response = response || null;
    }
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("aria-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined)); // strings become Text nodes
    return node;
  }

  return Object.freeze({ ApiError, el });
})();

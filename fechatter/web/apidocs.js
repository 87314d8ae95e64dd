// The API docs page (/docs): Swagger UI over /openapi.json, from this origin only.
// An external file, not an inline script, so the page's CSP needs no 'unsafe-inline'.
"use strict";

window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    // No badge from the public validator service: the page makes no request elsewhere.
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
  });
});

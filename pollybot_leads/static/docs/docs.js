// The API documentation page. Its configuration is fixed here: the document is always
// this server's own, and Swagger UI's query-string configuration (?url=, ?configUrl=)
// is off, so a link to /api/docs cannot make the page load a foreign document.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/docs/openapi.json",
    dom_id: "#swagger-ui",
    queryConfigEnabled: false,
    validatorUrl: null,
    deepLinking: true,
    displayOperationId: true,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 1,
    tryItOutEnabled: false,
    persistAuthorization: false,
    withCredentials: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});

"use strict";
// /docs: Swagger UI over this service's own OpenAPI document, from vendored files only.
window.addEventListener("DOMContentLoaded", () => {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,  // the default would send the document to validator.swagger.io
    deepLinking: true,
    persistAuthorization: false,
  });
});

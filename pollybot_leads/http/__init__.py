"""HTTP plumbing every feature shares: middlewares, request bodies, the response
envelope, the OpenAPI builder and the documentation page."""

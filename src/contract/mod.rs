//! Validation of request and response bodies against Microsoft's Azure REST specs (Swagger 2.0).

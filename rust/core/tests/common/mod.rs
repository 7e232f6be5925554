pub mod otlp_prost;

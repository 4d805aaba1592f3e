//! JSON Schemas of messages: the compatibility engine behind `schema-check`.

pub mod compat;

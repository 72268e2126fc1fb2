//! One module per page, each with the server functions it calls.

pub mod account;
pub mod arena;
pub mod compare;
pub mod datasets;
pub mod home;
pub mod leaderboard;
pub mod models;
pub mod not_found;
pub mod training;

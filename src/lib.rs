pub mod catalog;
pub mod config;
pub mod providers;
pub mod storage;

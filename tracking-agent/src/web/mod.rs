//! The pages: [`assets`] embeds them and their scripts, styles and world map; `pages` serves
//! them and the login that turns the admin token into a cookie.

pub mod assets;
mod pages;

pub use pages::{pages, public};

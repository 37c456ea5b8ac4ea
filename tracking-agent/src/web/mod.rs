//! The pages, their scripts, styles and world map, embedded in the binary ([`assets`]);
//! `control::pages` serves them.

pub mod assets;

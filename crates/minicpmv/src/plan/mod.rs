//! Memory planning: what a pair needs on this machine before anything is loaded ([`memory`]),
//! what the machine has ([`system`]), and what a video costs ([`video`]).

pub mod memory;
pub mod system;
pub mod video;

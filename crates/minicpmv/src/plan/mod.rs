//! Memory planning: what a pair needs on this machine before anything is loaded ([`memory`]),
//! and what the machine has ([`system`]); a video's cost is [`crate::prompt::video`].

pub mod memory;
pub mod split;
pub mod system;

//! Layers 13-17: physical memory and who owns each page.

pub mod memaux;
pub mod memblock;
pub mod memops;
pub mod pageindex;
pub mod pagemgmt;

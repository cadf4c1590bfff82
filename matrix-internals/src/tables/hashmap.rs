//! placeholder
/// placeholder
pub struct ShmHashMap;
/// placeholder
pub enum MapError {}

//! Layers 30-34: traps. This part holds the host's side: stage-2 faults (FaultHandler) and
//! hypercall dispatch (TrapDispatcher).

pub mod dispatcher;
pub mod faulthandler;

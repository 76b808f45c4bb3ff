//! Layers 30-34: traps. The host's stage-2 faults (FaultHandler, layer 31), hypercall
//! dispatch (TrapDispatcher, layer 32), the registers around a trap (TrapHandlerRaw, layer 33)
//! and the top-level step that routes every exception (TrapHandler, layer 34).

pub mod dispatcher;
pub mod faulthandler;
pub mod traphandler;
pub mod traphandlerraw;

//! Sans-IO SASL server mechanisms shared by every protocol.

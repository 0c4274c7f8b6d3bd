public import HandlerKit
import ConfigurationHandler
import FirmwareHandler
import LogfileHandler
import MessageHandler
import RestartHandler
import SoftwareHandler

/// The compiled handlers linked into this agent, by the name a `swift:` declaration uses.
public let builtinHandlers: [String: any OperationHandler.Type] = [
    "Configuration": ConfigurationHandler.self,
    "Firmware": FirmwareHandler.self,
    "Logfile": LogfileHandler.self,
    "Message": MessageHandler.self,
    "Restart": RestartHandler.self,
    "Software": SoftwareHandler.self,
]

public import HandlerKit
import ConfigurationHandler
import FirmwareHandler
import MessageHandler
import RestartHandler
import SoftwareHandler

/// The compiled handlers linked into this agent, by the name a `swift:` declaration uses.
public let builtinHandlers: [String: any OperationHandler.Type] = [
    "Configuration": ConfigurationHandler.self,
    "Firmware": FirmwareHandler.self,
    "Message": MessageHandler.self,
    "Restart": RestartHandler.self,
    "Software": SoftwareHandler.self,
]

public import HandlerKit
import ConfigurationHandler
import DeviceProfileHandler
import FirmwareHandler
import LogfileHandler
import MessageHandler
import RestartHandler
import SoftwareHandler

/// The compiled handlers linked into this agent, by the name a `swift:` declaration uses.
public let builtinHandlers: [String: any OperationHandler.Type] = [
    "Configuration": ConfigurationHandler.self,
    "DeviceProfile": DeviceProfileHandler.self,
    "Firmware": FirmwareHandler.self,
    "Logfile": LogfileHandler.self,
    "Message": MessageHandler.self,
    "Restart": RestartHandler.self,
    "Software": SoftwareHandler.self,
]

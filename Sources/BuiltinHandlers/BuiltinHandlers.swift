public import HandlerKit
import MessageHandler

/// The compiled handlers linked into this agent, by the name a `swift:` declaration uses.
public let builtinHandlers: [String: any OperationHandler.Type] = [
    "Message": MessageHandler.self,
]

import Blink
import HandlerKitRunner

// The whole executable: HandlerKitRunner speaks the plugin protocol and calls the handler.
await HandlerRunner.run(Blink.self)

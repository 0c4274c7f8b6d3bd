import FoundationEssentials
import JSONSupport

/// Bayeux: handshakes, subscriptions, held connects and the notification buffer.
extension Tenant {
    // MARK: Bayeux

    func handshake() -> String {
        let id = "sandbox-" + newID()
        handshakeCount += 1
        bayeux[id] = BayeuxClient()
        return id
    }

    func subscribe(_ clientID: String, to channel: String) -> Bool {
        guard bayeux[clientID] != nil else { return false }
        bayeux[clientID]?.subscriptions.insert(channel)
        recordSubscription()
        return true
    }

    func disconnect(_ clientID: String) {
        bayeux[clientID]?.waiter?.continuation.resume(returning: .messages([]))
        bayeux[clientID] = nil
    }

    /// Holds a connect until a notification arrives or the hold time passes.
    func connect(_ clientID: String) async -> ConnectResult {
        expireIdleClients()
        guard var client = bayeux[clientID] else { return .unknownClient }
        if !client.queue.isEmpty {
            let messages = client.queue
            client.queue.removeAll()
            client.idleSince = .now
            bayeux[clientID] = client
            return .messages(messages)
        }
        if closing { return .messages([]) }
        if let previous = client.waiter {  // a second connect replaces the first
            previous.continuation.resume(returning: .messages([]))
        }
        nextID += 1
        let token = nextID
        let hold = settings.holdTime
        Task { [weak self] in
            try? await Task.sleep(for: hold)
            await self?.release(clientID, token: token)
        }
        return await withCheckedContinuation { continuation in
            bayeux[clientID]?.waiter = (token, continuation)
        }
    }

    func release(_ clientID: String, token: Int) {
        guard let waiter = bayeux[clientID]?.waiter, waiter.token == token else { return }
        bayeux[clientID]?.waiter = nil
        bayeux[clientID]?.idleSince = .now
        waiter.continuation.resume(returning: .messages([]))
    }

    /// Clients that have not polled within the buffer time lose their session (and their queued messages).
    func expireIdleClients() {
        let now = ContinuousClock.now
        for (id, client) in bayeux where client.waiter == nil && now - client.idleSince > settings.bufferTime {
            bayeux[id] = nil
        }
    }

    func deliver(_ operation: JSONValue) {
        expireIdleClients()
        let channel = "/" + agentID(of: operation["deviceId"]?.idValue ?? "")
        for (id, var client) in bayeux where client.subscriptions.contains(channel) {
            let message: JSONValue = ["channel": .string(channel), "data": operation, "id": .string(newID())]
            if let waiter = client.waiter {
                client.waiter = nil
                client.idleSince = .now
                bayeux[id] = client
                waiter.continuation.resume(returning: .messages(client.queue + [message]))
                bayeux[id]?.queue.removeAll()
            } else {
                client.queue.append(message)
                bayeux[id] = client
            }
        }
    }
}

/// The one place the version is set: `switchyard --version`, the device's `c8y_Agent` fragment and the
/// Debian package (`packaging/deb` reads it from this line) all take it from here.
public let switchyardVersion = "0.2.0"

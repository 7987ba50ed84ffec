// Plugin versions for every module, applied per module.
// AGP 9.4 (September 2026) compiles Kotlin itself ("built-in Kotlin"), so `:app` applies no
// Kotlin plugin; the pure-JVM `:core` applies org.jetbrains.kotlin.jvm, whose version here also
// sets the Kotlin compiler AGP uses (AGP 9.4 needs at least KGP 2.2.10). 2.4.20 is the compiler
// the core is built and tested with outside Gradle (npm `kotlin-compiler@2.4.20`).
plugins {
    id("com.android.application") version "9.4.0" apply false
    id("org.jetbrains.kotlin.jvm") version "2.4.20" apply false
}

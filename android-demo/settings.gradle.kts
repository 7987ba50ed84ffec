// The edgekit Android demo: `:app` is the Android UI; `:core` is the pure-Kotlin/JVM core
// (manifest, preprocessing, tokenizer, scheduler, bench report) that the app calls and that
// is also compiled and tested without Gradle or an Android SDK (core/jvm-test.sh).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    // PREFER_SETTINGS rather than FAIL_ON_PROJECT_REPOS: a module that names mavenCentral()
    // itself still builds, but every module resolves from the same two repositories.
    repositoriesMode.set(RepositoriesMode.PREFER_SETTINGS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "edgekit-android-demo"
include(":app", ":core")

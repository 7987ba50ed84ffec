// :core — the pure-Kotlin/JVM core of the Android demo (package dev.edgekit.core): manifest,
// preprocessing, top-k, CLIP tokenizer, DDIM scheduler and guidance, bench statistics and the
// bench report writer. No Android imports, so the same sources also compile and test with
// plain kotlinc (jvm-test.sh) where there is no Gradle or Android SDK.
plugins {
    id("org.jetbrains.kotlin.jvm")
}


kotlin {
    jvmToolchain(17)
}

dependencies {
    // Gson 2.10+: the JSON of manifests and bench reports (jvm-test.sh uses Debian's 2.10).
    implementation("com.google.code.gson:gson:2.13.1")
    testImplementation("junit:junit:4.13.2")
    testImplementation(kotlin("test-junit"))
}

tasks.test {
    // The contract vectors edgekit writes (tests/contract), read by every test here.
    systemProperty("edgekit.contract.dir", rootProject.file("../tests/contract").absolutePath)
    systemProperty(
        "edgekit.report.out",
        layout.buildDirectory.file("reports/edgekit/bench.json").get().asFile.absolutePath,
    )
}

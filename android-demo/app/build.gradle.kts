// The Android demo app: a thin UI over `:core`; the three runtimes do the inference.
// Nothing here is compiled on edgekit's Linux CI machine (no Android SDK there); the GitHub
// workflow .github/workflows/android-demo.yml builds it with `:app:assembleDebug`.
plugins {
    id("com.android.application")
}

// Runtime library versions, also written into BuildConfig so bench reports name the exact
// library that measured them (RuntimeInfo.version).
// - LiteRT 2.3.0 (Google Maven): the CompiledModel API; its CPU accelerator is XNNPACK.
// - ExecuTorch 1.5.1: the same release as edgekit's exporter (executorch==1.5.1), so the .pte
//   program format and the XNNPACK delegate match what edgekit wrote and verified.
// - ONNX Runtime 1.31.0: the newest onnxruntime-android on Maven Central when this was written
//   (edgekit verifies with onnxruntime 1.32 on the host; opset 18 runs on both).
val litertVersion = "2.3.0"
val executorchVersion = "1.5.1"
val onnxruntimeVersion = "1.31.0"

android {
    namespace = "dev.edgekit.demo"
    compileSdk = 37

    defaultConfig {
        // The application id is part of the adb benchmark protocol (BENCH_PROTOCOL.md).
        applicationId = "dev.edgekit.demo"
        // Min SDK 26 (Android 8.0): the tflite-android target profile promises API 26+
        // (targets/tflite-android.toml), above what the runtimes need (LiteRT 24, ExecuTorch 23,
        // ONNX Runtime 24). Thermal status needs API 29 and is reported as unavailable below it.
        minSdk = 26
        targetSdk = 37
        versionCode = 1
        versionName = "0.1.0"

        buildConfigField("String", "LITERT_VERSION", "\"$litertVersion\"")
        buildConfigField("String", "EXECUTORCH_VERSION", "\"$executorchVersion\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"$onnxruntimeVersion\"")

        ndk {
            // ExecuTorch's AAR ships only these two ABIs; a phone or an x86_64 emulator.
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    buildFeatures {
        buildConfig = true
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        // Model files are memory-mapped or copied out of the APK as they are; compressing them
        // would only slow the copy.
        noCompress += listOf("tflite", "pte", "onnx", "data", "bin")
    }
}

dependencies {
    implementation(project(":core"))
    implementation("com.google.ai.edge.litert:litert:$litertVersion")
    implementation("org.pytorch:executorch-android:$executorchVersion")
    implementation("com.microsoft.onnxruntime:onnxruntime-android:$onnxruntimeVersion")
    // FileProvider: the camera app writes the full-resolution photo into a file we own.
    implementation("androidx.core:core:1.17.0")
}

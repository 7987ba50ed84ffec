"""The companion demo apps from the host's side: `edgekit install` copies artifacts into an app,
`edgekit bench --device adb` runs the Android app's benchmark mode over adb."""

//! Audio backends (`-audiodev`) and sound cards, as libvirt 9.0 maps `<audio>` and `<sound>`.

use oxvirt_domain::{
    Address, Audio, AudioSettings, AudioStream, AudioType, ControllerType, Sound, SoundCodec,
    SoundModel,
};
use serde_json::{json, Map, Value};

use super::Builder;
use crate::QemuError;

impl Builder<'_> {
    /// `-audiodev` for each `<audio>`; `spice_display` says whether the domain has a SPICE
    /// display to carry `type='spice'` sound.
    pub(super) fn audio(&mut self, audios: &[Audio], spice_display: bool) -> Result<(), QemuError> {
        for audio in audios {
            let Audio {
                id,
                audio_type,
                timer_period,
                server_name,
                sdl_driver,
                path,
                input,
                output,
                line,
            } = audio;
            let element = format!("devices/audio[@id='{id}']");
            let driver = match audio_type {
                // A backend that discards sound.
                AudioType::None => "none",
                AudioType::Alsa => "alsa",
                AudioType::Jack => "jack",
                AudioType::Oss => "oss",
                AudioType::Pulseaudio => "pa",
                AudioType::Sdl => "sdl",
                AudioType::File => "wav",
                // Sound through the SPICE client (libvirt's default backend with a SPICE display).
                AudioType::Spice if spice_display => "spice",
                AudioType::Spice => {
                    return Err(QemuError::invalid(
                        element,
                        *line,
                        "audio type 'spice' needs a SPICE display",
                    ))
                }
                AudioType::Coreaudio => {
                    return Err(QemuError::unsupported(
                        element,
                        *line,
                        "coreaudio exists on macOS hosts only",
                    ))
                }
                AudioType::Dbus => return Err(QemuError::unsupported(
                    element,
                    *line,
                    "a D-Bus audio backend needs QEMU's D-Bus display, which oxvirt does not offer",
                )),
            };
            let mut audiodev = Map::new();
            audiodev.insert("id".into(), json!(format!("audio{id}")));
            audiodev.insert("driver".into(), json!(driver));
            if let Some(period) = timer_period {
                audiodev.insert("timer-period".into(), json!(period));
            }
            if let Some(server) = server_name {
                audiodev.insert("server".into(), json!(server));
            }
            if sdl_driver.is_some() {
                // libvirt passes it to QEMU as SDL_AUDIODRIVER in its environment; oxvirt
                // launches QEMU with no per-domain environment.
                return Err(QemuError::unsupported(
                    format!("{element}@driver"),
                    *line,
                    "SDL's audio driver cannot be chosen (SDL picks its own)",
                ));
            }
            match (audio_type, path) {
                (AudioType::File, Some(path)) => {
                    audiodev.insert("path".into(), json!(path));
                }
                // libvirt leaves QEMU to write qemu.wav in its working directory.
                (AudioType::File, None) => {
                    return Err(QemuError::invalid(
                        format!("{element}@path"),
                        *line,
                        "a file audio backend needs path= (the WAV file to write)",
                    ))
                }
                _ => {}
            }
            for (key, stream) in [("in", input), ("out", output)] {
                if let Some(stream) = stream {
                    audiodev.insert(key.into(), stream_properties(stream));
                }
            }
            self.arg("-audiodev", Value::Object(audiodev).to_string());
        }
        Ok(())
    }

    /// Sound cards; each plays into its `<audio>`, or the first one (as libvirt picks it).
    pub(super) fn sounds(&mut self, sounds: &[Sound], audios: &[Audio]) -> Result<(), QemuError> {
        for (index, sound) in sounds.iter().enumerate() {
            let Sound {
                model,
                codecs,
                audio_id,
                address,
                line,
            } = sound;
            let element = format!("devices/sound[{index}]");
            let audiodev = match audio_id.or_else(|| audios.first().map(|a| a.id)) {
                Some(id) => format!("audio{id}"),
                None => {
                    return Err(QemuError::invalid(
                        element,
                        *line,
                        "a sound card needs an <audio> backend",
                    ))
                }
            };
            let id = format!("sound{index}");
            let pci_driver = match model {
                SoundModel::Ich6 => "intel-hda",
                SoundModel::Ich9 => "ich9-intel-hda",
                SoundModel::Ac97 => "AC97",
                SoundModel::Es1370 => "ES1370",
                // libvirt maps pcspk onto the machine's own speaker (-machine pcspk-audiodev=),
                // which is not done here. QEMU 7.2 has no ich7 device (validation refuses it
                // already, as libvirt 9.0 does).
                SoundModel::Pcspk | SoundModel::Ich7 => {
                    return Err(QemuError::unsupported(
                        format!("{element}@model"),
                        *line,
                        "sound models ich6, ich9, ac97, es1370, sb16 and usb are supported",
                    ))
                }
                SoundModel::Sb16 | SoundModel::Usb => {
                    if let Some(address) = address {
                        let wanted = if *model == SoundModel::Usb {
                            "a USB"
                        } else {
                            "no"
                        };
                        if !matches!((model, address), (SoundModel::Usb, Address::Usb(_))) {
                            return Err(QemuError::invalid(
                                format!("{element}/address"),
                                address.line(),
                                format!("this sound card takes {wanted} address"),
                            ));
                        }
                    }
                    let device = if *model == SoundModel::Usb {
                        if !self.has_controller(ControllerType::Usb, 0) {
                            return Err(QemuError::invalid(
                                element,
                                *line,
                                "a USB sound card needs a USB controller",
                            ));
                        }
                        json!({"driver": "usb-audio", "id": id, "audiodev": audiodev, "bus": "usb.0"})
                    } else {
                        json!({"driver": "sb16", "id": id, "audiodev": audiodev})
                    };
                    self.devices.on_buses.push(device);
                    continue;
                }
            };
            let hda = matches!(model, SoundModel::Ich6 | SoundModel::Ich9);
            let device = if hda {
                json!({"driver": pci_driver, "id": id})
            } else {
                json!({"driver": pci_driver, "id": id, "audiodev": audiodev})
            };
            self.add_pci_device(device, address.as_ref(), &element)?;
            if hda {
                // An HD Audio controller plays through its codecs; QEMU's duplex one when none
                // is given, as libvirt does.
                let codecs = if codecs.is_empty() {
                    &[SoundCodec::Duplex][..]
                } else {
                    &codecs[..]
                };
                for (cad, codec) in codecs.iter().enumerate() {
                    self.devices.on_buses.push(json!({
                        "driver": format!("hda-{}", codec.as_str()),
                        "id": format!("{id}-codec{cad}"),
                        "bus": format!("{id}.0"),
                        "cad": cad,
                        "audiodev": audiodev,
                    }));
                }
            }
        }
        Ok(())
    }
}

/// QEMU's `in`/`out` options of an audiodev (AudiodevPerDirectionOptions and the backend's own).
fn stream_properties(stream: &AudioStream) -> Value {
    let AudioStream {
        mixing_engine,
        fixed_settings,
        voices,
        buffer_length,
        settings,
        dev,
        try_poll,
        name,
        stream_name,
        latency,
        // Audio streams are refused as a whole or not at all.
        line: _,
    } = stream;
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.into(), value);
        }
    };
    put("mixing-engine", mixing_engine.map(|v| json!(v)));
    put("fixed-settings", fixed_settings.map(|v| json!(v)));
    put("voices", voices.map(|v| json!(v)));
    put("buffer-length", buffer_length.map(|v| json!(v)));
    if let Some(AudioSettings {
        frequency,
        channels,
        format,
    }) = settings
    {
        put("frequency", frequency.map(|v| json!(v)));
        put("channels", channels.map(|v| json!(v)));
        put("format", format.map(|v| json!(v.as_str())));
    }
    put("dev", dev.as_ref().map(|v| json!(v)));
    put("try-poll", try_poll.map(|v| json!(v)));
    put("name", name.as_ref().map(|v| json!(v)));
    put("stream-name", stream_name.as_ref().map(|v| json!(v)));
    put("latency", latency.map(|v| json!(v)));
    Value::Object(out)
}

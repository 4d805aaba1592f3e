//! The apalis codec: envelopes out, the upcaster chain in.

use std::fmt;
use std::sync::Arc;

use apalis_core::backend::codec::Codec;
use upcaster::{EncodeError, Format, Message, Registry};

use crate::{CodecError, DecodeError, Job};

/// An apalis [`Codec`] that stores every job as an upcaster envelope of the registry's
/// current version, and reads any version the registry has a chain for.
///
/// Set it on any backend whose wire type is bytes (Redis, PostgreSQL, SQLite: all of apalis'
/// 1.0 backends) with `.with_codec(UpcasterCodec::new(registry))`. One codec serves every type
/// its registry knows, and clones share the registry.
///
/// It is the codec of two job types:
///
/// - [`Job<T>`], which is what to use: decoding never fails, and a stored job that does not
///   decode reaches [`crate::Upcast`] to be settled as one task (see the crate's docs).
/// - a bare `T`: a stored job that does not decode is then a [`CodecError::Decode`], which
///   apalis reports as a backend error that stops the worker; for code that reads jobs itself
///   (`BackendExt::poll_next_args`) and wants the error there.
///
/// ```
/// use apalis_core::backend::codec::Codec;
/// use serde::{Deserialize, Serialize};
/// use upcaster::{Format, Registry};
/// use upcaster_apalis::{Job, UpcasterCodec};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
/// #[message(name = "Ping", version = 1)]
/// struct Ping {
///     n: u32,
/// }
///
/// let codec = UpcasterCodec::new(Registry::builder().register::<Ping>().build()?);
/// let stored = codec.encode(&Job::new(Ping { n: 3 }))?;
/// assert_eq!(stored, br#"{"type":"Ping","version":1,"payload":{"n":3}}"#);
///
/// let job: Job<Ping> = codec.decode(&stored)?;
/// assert_eq!(job.message(), Some(&Ping { n: 3 }));
///
/// let newer = br#"{"type":"Ping","version":2,"payload":{"n":3}}"#.to_vec();
/// let job: Job<Ping> = codec.decode(&newer)?;
/// let error = job.error().ok_or("decoded a newer version")?;
/// assert!(error.is_future_version());
/// assert_eq!(error.raw(), newer);
///
/// let packed = codec.format(Format::MessagePack).encode(&Job::new(Ping { n: 3 }))?;
/// assert_eq!(packed[0] & 0xf0, 0x80); // a MessagePack map
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct UpcasterCodec {
    registry: Arc<Registry>,
    format: Format,
}

impl UpcasterCodec {
    /// A codec that writes JSON envelopes and reads with `registry`.
    pub fn new(registry: impl Into<Arc<Registry>>) -> Self {
        UpcasterCodec {
            registry: registry.into(),
            format: Format::Json,
        }
    }

    /// The codec writing `format` instead: [`Format::Json`] (the default) or
    /// [`Format::MessagePack`]. Reading detects either, so a queue can switch while it holds
    /// jobs of the other.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The format this codec writes.
    pub fn written_format(&self) -> Format {
        self.format
    }

    /// The registry it reads and writes with.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Writes `message` as the envelope a backend stores.
    pub fn encode_message<T: Message>(&self, message: &T) -> Result<Vec<u8>, EncodeError> {
        self.registry.encode(message, self.format)
    }

    /// Reads stored bytes as the current `T`, running the chain if they are older.
    pub fn decode_job<T: Message>(&self, stored: &[u8]) -> Job<T> {
        match self.registry.decode::<T>(stored) {
            Ok(decoded) => {
                let arrived = decoded.arrived_version();
                Job::arrived(decoded.message, arrived)
            }
            Err(e) => Job::failed(DecodeError::new::<T>(e)),
        }
    }
}

impl fmt::Debug for UpcasterCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcasterCodec")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl<T: Message> Codec<Job<T>> for UpcasterCodec {
    type Error = CodecError;
    type Compact = Vec<u8>;

    fn encode(&self, job: &Job<T>) -> Result<Vec<u8>, CodecError> {
        match job.as_state() {
            Ok(message) => Ok(self.encode_message(message)?),
            Err(failed) => Ok(failed.raw().to_vec()),
        }
    }

    fn decode(&self, stored: &Vec<u8>) -> Result<Job<T>, CodecError> {
        Ok(self.decode_job(stored))
    }
}

impl<T: Message> Codec<T> for UpcasterCodec {
    type Error = CodecError;
    type Compact = Vec<u8>;

    fn encode(&self, message: &T) -> Result<Vec<u8>, CodecError> {
        Ok(self.encode_message(message)?)
    }

    fn decode(&self, stored: &Vec<u8>) -> Result<T, CodecError> {
        self.decode_job::<T>(stored)
            .into_result()
            .map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    mod v1 {
        use serde::{Deserialize, Serialize};

        #[derive(Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
        #[serde(rename_all = "camelCase")]
        #[message(name = "AddPonkaToImage", version = 1)]
        pub struct AddPonkaToImage {
            pub image_post_id: u64,
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize, upcaster::Message)]
    #[serde(rename_all = "camelCase")]
    #[message(name = "AddPonkaToImage", version = 2)]
    struct AddPonkaToImage {
        image_post: u64,
    }

    fn today() -> UpcasterCodec {
        let registry = Registry::builder()
            .register::<AddPonkaToImage>()
            .upcaster::<AddPonkaToImage>(upcaster::Upcaster::new(1, 2, |p| {
                let o = p.as_object_mut().ok_or("not an object")?;
                let id = o.remove("imagePostId").ok_or("`imagePostId` is missing")?;
                o.insert("imagePost".into(), id);
                Ok(())
            }))
            .build()
            .unwrap();
        UpcasterCodec::new(registry)
    }

    fn yesterday(format: Format) -> UpcasterCodec {
        let registry = Registry::builder()
            .register::<v1::AddPonkaToImage>()
            .build()
            .unwrap();
        UpcasterCodec::new(Arc::new(registry)).format(format)
    }

    #[test]
    fn yesterdays_jobs_decode_as_todays_in_both_formats() {
        for format in [Format::Json, Format::MessagePack] {
            let old = v1::AddPonkaToImage { image_post_id: 7 };
            let stored = yesterday(format).encode(&Job::new(old)).unwrap();
            let job: Job<AddPonkaToImage> = today().decode(&stored).unwrap();
            assert_eq!(job.message(), Some(&AddPonkaToImage { image_post: 7 }));
            assert_eq!(job.arrived_version(), Some(1));
            // The bare-`T` codec reads it too.
            let bare: AddPonkaToImage = today().decode(&stored).unwrap();
            assert_eq!(bare, AddPonkaToImage { image_post: 7 });
        }
    }

    #[test]
    fn the_written_envelope_is_the_registrys() {
        let codec = today();
        let message = AddPonkaToImage { image_post: 7 };
        let stored = codec
            .encode(&Job::from(AddPonkaToImage { image_post: 7 }))
            .unwrap();
        assert_eq!(
            stored,
            br#"{"type":"AddPonkaToImage","version":2,"payload":{"imagePost":7}}"#
        );
        assert_eq!(
            Codec::<AddPonkaToImage>::encode(&codec, &message).unwrap(),
            stored
        );
        let packed = codec.clone().format(Format::MessagePack);
        assert_eq!(packed.written_format(), Format::MessagePack);
        assert_eq!(
            packed.encode(&Job::new(message)).unwrap(),
            codec
                .registry()
                .encode(&AddPonkaToImage { image_post: 7 }, Format::MessagePack)
                .unwrap()
        );
    }

    #[test]
    fn a_job_that_did_not_decode_keeps_and_writes_back_its_bytes() {
        let stored = b"\xc1 garbage".to_vec();
        let job: Job<AddPonkaToImage> = today().decode(&stored).unwrap();
        let error = job.error().expect("garbage does not decode");
        assert_eq!(error.raw(), stored);
        assert_eq!(error.expected(), "AddPonkaToImage");
        assert_eq!(error.current(), 2);
        assert!(!error.is_future_version());
        assert_eq!(today().encode(&job).unwrap(), stored);
        assert_eq!(job.into_result().unwrap_err().into_raw(), stored);
    }

    #[test]
    fn the_bare_codec_reports_a_newer_version_with_its_bytes() {
        let stored =
            br#"{"type":"AddPonkaToImage","version":3,"payload":{"imagePost":7}}"#.to_vec();
        let e = Codec::<AddPonkaToImage>::decode(&today(), &stored).unwrap_err();
        let CodecError::Decode(e) = e else {
            panic!("not a decode error: {e}")
        };
        assert!(e.is_future_version());
        assert_eq!(e.found_type(), Some("AddPonkaToImage"));
        assert_eq!(e.found_version(), Some(3));
        assert_eq!(e.into_error().into_raw(), stored);
    }
}

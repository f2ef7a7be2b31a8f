//! Bounded big-endian reading for the ledger's binary encodings: the shared cursor of
//! `vpbox-wire`, with errors that name what was being decoded.

use crate::Error;

pub(crate) struct Reader<'a> {
    inner: vpbox_wire::Reader<'a>,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { inner: vpbox_wire::Reader::new(buf), what }
    }

    pub(crate) fn fail(&self, why: &'static str) -> Error {
        Error::Malformed { what: self.what, why }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        self.inner.take(n).map_err(|_| self.fail("truncated"))
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        self.inner.u8().map_err(|_| self.fail("truncated"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.inner.u32().map_err(|_| self.fail("truncated"))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        self.inner.u64().map_err(|_| self.fail("truncated"))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.inner.array().map_err(|_| self.fail("truncated"))
    }

    pub(crate) fn rest_len(&self) -> usize {
        self.inner.remaining()
    }

    pub(crate) fn finish(&self) -> Result<(), Error> {
        self.inner.finish().map_err(|_| self.fail("trailing bytes"))
    }
}

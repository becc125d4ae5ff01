/* copyledger: files dropped anywhere on the page go to one handler, and the drop zone shows
 * when files are being dragged over. Shared by the verification page and the log explorer. */
'use strict';

window.copyledgerDropZone = function (zone, onFiles) {
  for (const ev of ['dragenter', 'dragover']) {
    document.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add('over'); });
  }
  document.addEventListener('dragleave', (e) => { if (!e.relatedTarget) zone.classList.remove('over'); });
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    if (e.dataTransfer && e.dataTransfer.files.length) onFiles(Array.from(e.dataTransfer.files));
  });
};
